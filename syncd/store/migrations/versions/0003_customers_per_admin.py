"""customers belong to their admin: unique (admin_id, email) instead of a global email

A customer who booked with two admins becomes two rows, one per admin, each session
pointing at its admin's row; a customer row without sessions is dropped.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _split_per_admin(conn: sa.Connection) -> None:
    """Give every customer row its admin; copy a row shared by several admins."""
    pairs = conn.execute(
        sa.text(
            "SELECT DISTINCT customer_id, admin_id FROM sessions ORDER BY customer_id, admin_id"
        )
    ).all()
    owned: set[int] = set()
    for customer_id, admin_id in pairs:
        if customer_id not in owned:
            owned.add(customer_id)
            conn.execute(
                sa.text("UPDATE customers SET admin_id = :a WHERE id = :c"),
                {"a": admin_id, "c": customer_id},
            )
            continue
        row = conn.execute(
            sa.text("SELECT email, name, tz FROM customers WHERE id = :c"), {"c": customer_id}
        ).one()
        new_id = conn.execute(
            sa.text(
                "INSERT INTO customers (admin_id, email, name, tz) "
                "VALUES (:a, :e, :n, :t) RETURNING id"
            ),
            {"a": admin_id, "e": row.email, "n": row.name, "t": row.tz},
        ).scalar_one()
        conn.execute(
            sa.text(
                "UPDATE sessions SET customer_id = :n WHERE customer_id = :c AND admin_id = :a"
            ),
            {"n": new_id, "c": customer_id, "a": admin_id},
        )
    conn.execute(sa.text("DELETE FROM customers WHERE admin_id IS NULL"))


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("customers", sa.Column("admin_id", sa.Integer(), nullable=True))
    if conn.dialect.name == "postgresql":
        op.drop_constraint("customers_email_key", "customers", type_="unique")
    else:
        # SQLite cannot drop the unnamed UNIQUE (email): rebuild the table without it
        # (Database.upgrade runs migrations with foreign keys off, as SQLite asks).
        op.create_table(
            "_customers_new",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("email", sa.String(length=320), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("tz", sa.String(length=64), nullable=False),
            sa.Column("admin_id", sa.Integer(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.execute(
            "INSERT INTO _customers_new (id, email, name, tz, admin_id) "
            "SELECT id, email, name, tz, admin_id FROM customers"
        )
        op.drop_table("customers")
        op.rename_table("_customers_new", "customers")
    _split_per_admin(conn)
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.alter_column("admin_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key("fk_customers_admin_id", "admins", ["admin_id"], ["id"])
        batch_op.create_unique_constraint("uq_customers_admin_email", ["admin_id", "email"])
        batch_op.create_index("ix_customers_admin_id", ["admin_id"], unique=False)


def downgrade() -> None:
    raise NotImplementedError("customers cannot be merged back across admins")

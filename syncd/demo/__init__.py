"""``syncd demo``: an embedded Radicale, a mail catcher and a walkthrough of every gesture."""

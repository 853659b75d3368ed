"""Microsoft 365 / Outlook.com through Microsoft Graph (msal for identity, httpx for Graph)."""

"""Browser tests: the admin as an operator sees it, in Debian's Chromium driven by Playwright (see conftest.py)."""

"""The load harness's parts: processes and /proc readings, PKI, the proxies, scenarios, the report."""

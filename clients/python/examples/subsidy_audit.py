"""The subsidy-audit walkthrough's queries as the auditor, over Flight SQL (see examples/subsidy-audit/README.md).

    VEIL_FLIGHT=grpc://127.0.0.1:7879 VEIL_TOKEN=<auditor token> python subsidy_audit.py
"""

from _walkthrough import run

if __name__ == "__main__":
    run("subsidy-audit", "auditor")

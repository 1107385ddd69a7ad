"""The elderly-care walkthrough's queries as the civil-analyst, over Flight SQL (see examples/elderly-care/README.md).

    VEIL_FLIGHT=grpc://127.0.0.1:7879 VEIL_TOKEN=<civil-analyst token> python elderly_care.py
"""

from _walkthrough import run

if __name__ == "__main__":
    run("elderly-care", "civil-analyst")

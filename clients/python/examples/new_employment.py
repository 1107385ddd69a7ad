"""The new-employment walkthrough's queries as the hrss-analyst, over Flight SQL (see examples/new-employment/README.md).

    VEIL_FLIGHT=grpc://127.0.0.1:7879 VEIL_TOKEN=<hrss-analyst token> python new_employment.py
"""

from _walkthrough import run

if __name__ == "__main__":
    run("new-employment", "hrss-analyst")

"""The hotline-trends walkthrough's queries as the civil-analyst, over Flight SQL (see examples/hotline-trends/README.md).

    VEIL_FLIGHT=grpc://127.0.0.1:7879 VEIL_TOKEN=<civil-analyst token> python hotline_trends.py
"""

from _walkthrough import run

if __name__ == "__main__":
    run("hotline-trends", "civil-analyst")

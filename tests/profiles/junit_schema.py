"""JUnit XML checked against tests/profiles/data/junit.xsd (the dialect CI services read)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

JUNIT_XSD = Path(__file__).parent / "data" / "junit.xsd"


def validate_junit(text: str) -> ET.Element:
    """Schema-valid, and the counts in the suite's attributes match its test cases."""
    import xmlschema

    xmlschema.XMLSchema(JUNIT_XSD).validate(text)
    suite = ET.fromstring(text)
    cases = list(suite.iter("testcase"))
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
    return suite

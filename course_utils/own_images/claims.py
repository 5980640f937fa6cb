"""Lesson 10's claims that hold only under a condition this run may not meet, such as random weights: checked
with ``lesson.claim`` when it is met, printed as not checked (and why) when it is not."""
from .. import claims


def claim(config, holds: bool, text: str, only_when: bool = True, condition: str = "random weights",
          only_on: str | None = None) -> None:
    """``lesson.claim(config, holds, text, only_on)`` if ``only_when``; otherwise print that the claim, measured
    under ``condition``, is not checked on this run (e.g. with pretrained weights the lesson's random-weight
    findings do not apply)."""
    if only_when:
        claims.check(config, holds, text, only_on=only_on)
    else:
        print(f"(measured with {condition}; not checked on this run) {text}")
        claims.keep(claims.Record(text, None))  # in the lesson's tally and on the website's page of claims

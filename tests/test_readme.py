"""Every Python example in the README runs against the current API (so the README cannot drift)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    result = subprocess.run([sys.executable, "-c", BLOCKS[index]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_the_toy_example_prints_what_the_readme_says_and_every_gap_is_non_negative():
    """The example's printed gaps are the README's, every gap is >= 0 within 3 standard errors, the MVAE's
    (exact posterior) is 0 within them, the mixtures' are clearly positive."""
    text = README.read_text()
    block = next(b for b in BLOCKS if "LinearGaussianToy" in b)
    printed = re.search(r"prints\n\n```\n(.*?)```", text, flags=re.S).group(1)
    result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    def parse(text: str) -> dict[str, tuple[float, float]]:
        return {m: (float(g), float(e)) for m, g, e in
                re.findall(r"(\w+)\s+log p\(X\) - bound = (-?[\d.]+) ± ([\d.]+) nats", text)}

    gaps = parse(result.stdout)
    documented = parse(printed)
    assert documented.keys() == gaps.keys()  # the same numbers, up to the last digit's rounding on other CPUs
    assert all(abs(gaps[m][0] - documented[m][0]) <= 2e-4 for m in gaps)
    assert set(gaps) == {"mvae", "mmvae", "mopoe"}
    assert all(gap >= -3 * error for gap, error in gaps.values())
    assert abs(gaps["mvae"][0]) <= 3 * gaps["mvae"][1]
    assert gaps["mmvae"][0] > 10 * gaps["mmvae"][1] and gaps["mopoe"][0] > 10 * gaps["mopoe"][1]

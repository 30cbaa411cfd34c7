"""Claims: a paper's statements beside our measurements, recorded for the book's dashboard.

Every notebook ends with a claims cell, ``claims_table([Claim(...), ...], notebook=..., artifact=...)``,
which shows the table and **records** it as JSON in :func:`claims_dir`, together with a hash of
the code the kernel executed up to that cell (:func:`executed_code_hash`). The dashboard page
(:func:`collect`) reads the records of every notebook in the table of contents and calls one
*current* only when that hash equals the hash of the notebook's code cells as they are now
(:func:`notebook_code_hash`): a record left over from an older version of a notebook, or from
a run with injected parameters (papermill), is *stale*, and the book's build fails on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

__all__ = ["Claim", "KINDS", "CAUSES", "DECIDABLE_FACTOR", "cause_of", "diagnosis", "verdict", "claims_table", "claims_dir", "record", "executed_code_hash", "notebook_code_hash",
           "notebook_has_claims", "toc_notebooks", "find_book_root", "collect", "CLAIMS_ENV"]

CLAIMS_ENV = "FEATADV_CLAIMS_DIR"
_CALL = "claims_table("


KINDS = ("replication", "sanity")
# Why a claim does not replicate (✗) or is undecided, one of four diagnoses (shown before ``why_not``):
CAUSES = {
    "bug": "our bug",                                   # found and fixed; the claim keeps its test
    "scale": "stand-in or scale",                       # a CPU stand-in network, fewer iterations or samples
    "criterion": "ambiguous claim or our criterion",    # the paper's words admit more than one test
    "negative": "does not replicate",                   # an honest negative result, with what was checked
}


@dataclass(frozen=True)
class Claim:
    """One claim of a paper set beside our measurement.

    ``replicated`` must be computed from ``ours`` in the notebook (e.g. ``ours >= 0.9``), never
    typed; ``criterion`` says in words what was tested; ``why_not`` the likely reason when it
    does not replicate (shown beside a ✗ on the page and on the dashboard), and ``cause`` its diagnosis,
    a key of :data:`CAUSES` (``""``: not diagnosed yet). ``kind`` is
    ``"replication"`` (a test of the paper's claim: it could fail if the attack did not do what
    the paper says) or ``"sanity"`` (a check that holds by construction or is already a unit
    test, e.g. "the perturbation respects its bound"): sanity checks are shown but never counted
    as replications.
    """

    claim: str
    paper: str
    ours: str
    replicated: bool
    criterion: str = ""
    why_not: str = ""
    kind: str = "replication"
    n: int | None = None             # the sampled units (pairs, images, guides) behind ``ours``
    low: float | None = None         # ``ours``' 95 % interval, where it has one
    high: float | None = None
    undecided: bool = False          # the interval straddles the criterion: neither ✓ nor ✗
    n_to_decide: int | None = None   # about how many units would decide an undecided claim
    cause: str = ""                  # the diagnosis of a ✗ or undecided claim: a key of CAUSES

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.cause and self.cause not in CAUSES:
            raise ValueError(f"cause must be one of {tuple(CAUSES)} (or empty), got {self.cause!r}")

    @property
    def diagnosis(self) -> str:
        """What the page shows beside a ✗ or an undecided verdict (:func:`diagnosis`)."""
        return diagnosis(self.replicated, self.undecided, self.cause, self.why_not)

    @classmethod
    def judged(cls, claim: str, paper: str, interval, *, criterion: str, at_least: float | None = None,
               at_most: float | None = None, fmt: str = "{:.2f}", prefix: str = "", why_not: str = "",
               kind: str = "replication", cause: str = "") -> "Claim":
        """A claim judged on a whole interval (:mod:`featadv_core.analysis.uncertainty`): ✓ when all of
        ``interval`` meets ``at_least``/``at_most``, ✗ when none of it does, undecided when it straddles
        (then ``n_to_decide`` says about how many units would decide it). ``ours`` is ``prefix`` and the
        interval written with ``fmt``."""
        from .analysis.uncertainty import judge, n_to_decide

        state = judge(interval, at_least=at_least, at_most=at_most)
        return cls(claim, paper, prefix + interval.format(fmt), state == "replicated", criterion, why_not=why_not,
                   kind=kind, cause=cause, n=interval.n, low=interval.low, high=interval.high, undecided=state == "undecided",
                   n_to_decide=n_to_decide(interval, at_least=at_least, at_most=at_most)
                   if state == "undecided" else None)

    @classmethod
    def judged_all(cls, claim: str, paper: str, intervals: dict, *, criterion: str, at_least: float | None = None,
                   at_most: float | None = None, fmt: str = "{:.2f}", prefix: str = "", why_not: str = "",
                   kind: str = "replication", cause: str = "") -> "Claim":
        """A claim that *every* one of several quantities meets the criterion (a curve above 0.8 at every δ,
        each layer's median ≤ 0.5), judged on their intervals by :func:`~featadv_core.analysis.uncertainty.judge_all`.

        ``intervals`` maps a label (``"δ=5"``) to its interval. ``ours`` is ``prefix``, then how many pass as a
        whole and the weakest one (its estimate farthest toward failing); ``n`` is the smallest sample behind them and, when
        undecided, ``n_to_decide`` the largest number of units any straddling interval needs.
        """
        from .analysis.uncertainty import judge, judge_all, n_to_decide

        if not intervals:
            raise ValueError("judged_all needs at least one interval")
        state = judge_all(intervals.values(), at_least=at_least, at_most=at_most)
        sign = 1 if at_least is not None else -1
        weakest = min(intervals, key=lambda k: sign * intervals[k].value)  # the estimate farthest toward failing
        passing = sum(judge(i, at_least=at_least, at_most=at_most) == "replicated" for i in intervals.values())
        ours = (f"{prefix}{passing} of {len(intervals)} pass; weakest {weakest}: "
                f"{intervals[weakest].format(fmt).rsplit(', n = ', 1)[0]}")
        need = [n_to_decide(i, at_least=at_least, at_most=at_most) for i in intervals.values()
                if judge(i, at_least=at_least, at_most=at_most) == "undecided"]
        need = [k for k in need if k is not None]
        return cls(claim, paper, ours, state == "replicated", criterion, why_not=why_not, kind=kind, cause=cause,
                   n=min(i.n for i in intervals.values()), low=intervals[weakest].low, high=intervals[weakest].high,
                   undecided=state == "undecided",
                   n_to_decide=(max(need) if need else None) if state == "undecided" else None)

    @classmethod
    def conjoined(cls, claim: str, paper: str, criterion: str, parts, *, why_not: str = "", why_undecided: str = "",
                  kind: str = "replication", cause: str = "") -> "Claim":
        """One claim that needs every one of its ``parts`` — ``(label, Claim)`` pairs, each judged
        (:meth:`judged`, :meth:`judged_all`) or plain (a condition without sampling error, e.g. the figure's own
        image, or one with no interval, e.g. a Spearman ρ) — by :func:`~featadv_core.analysis.uncertainty.judge_all`'s
        rule: ✗ when a part is ✗, undecided when none is but one straddles, else ✓.

        ``ours`` lists the parts (``label: ours``); ``n`` and the interval are the deciding part's (the first
        failing, else the first straddling one); ``n_to_decide`` the largest any straddling part needs.
        ``why_not`` is shown for ✗, ``why_undecided`` for undecided.
        """
        if not parts:
            raise ValueError("conjoined needs at least one part")
        ours = _listed(parts)
        claims = [p for _, p in parts]
        failed = [p for p in claims if not p.replicated and not p.undecided]
        straddling = [p for p in claims if p.undecided]
        lead = (failed or straddling or [p for p in claims if p.n is not None] or claims)[0]
        need = [p.n_to_decide for p in straddling if p.n_to_decide]
        return cls(claim, paper, ours, not failed and not straddling, criterion,
                   why_not=why_not if failed else why_undecided if straddling else "", kind=kind, cause=cause, n=lead.n,
                   low=lead.low, high=lead.high, undecided=bool(straddling) and not failed,
                   n_to_decide=max(need) if need and not failed else None)

    @classmethod
    def counted(cls, claim: str, paper: str, criterion: str, parts, *, at_least: int, why_not: str = "",
                why_undecided: str = "", kind: str = "replication", cause: str = "") -> "Claim":
        """A claim that at least ``at_least`` of its ``parts`` hold ("below 12 % in most columns"): ``parts`` are
        ``(label, Claim)`` pairs, each judged (:meth:`judged`, :meth:`conjoined`, …) or plain. ✓ when ``at_least``
        parts pass as a whole, ✗ when even counting every straddling part as passing leaves fewer, else undecided.

        ``ours`` says how many pass (and straddle), then lists the parts; ``n`` and the interval are the deciding
        part's, as in :meth:`conjoined` (the first failing part of a ✗, the first straddling one of an undecided
        claim, else the first part with a sample); ``n_to_decide`` the units at which enough straddling parts would be
        decided (the ``at_least − passing``-th smallest of their needs).
        """
        parts = list(parts)
        if not 1 <= at_least <= len(parts):
            raise ValueError(f"at_least must be between 1 and the {len(parts)} parts, got {at_least}")
        claims = [p for _, p in parts]
        passing = [p for p in claims if p.replicated and not p.undecided]
        straddling = [p for p in claims if p.undecided]
        failed = [p for p in claims if not p.replicated and not p.undecided]
        state = ("replicated" if len(passing) >= at_least else
                 "not replicated" if len(passing) + len(straddling) < at_least else "undecided")
        lead = ((failed if state == "not replicated" else straddling if state == "undecided" else [])
                or [p for p in claims if p.n is not None] or claims)[0]
        need = sorted(p.n_to_decide for p in straddling if p.n_to_decide)
        missing = at_least - len(passing)
        ours = (f"{len(passing)} of {len(parts)} pass" + (f", {len(straddling)} undecided" if straddling else "")
                + ": " + _listed(parts))
        return cls(claim, paper, ours, state == "replicated", criterion,
                   why_not=why_not if state == "not replicated" else why_undecided if state == "undecided" else "",
                   kind=kind, cause=cause, n=lead.n, low=lead.low, high=lead.high, undecided=state == "undecided",
                   n_to_decide=need[missing - 1] if state == "undecided" and len(need) >= missing else None)


def _listed(parts) -> str:
    """A multi-part claim's parts as ``label: ours; …`` (a part without a label by its ``ours`` alone)."""
    return "; ".join(f"{label}: {p.ours}" if label else p.ours for label, p in parts)


def cause_of(replicated: bool, undecided: bool, cause: str) -> str:
    """The diagnosis key of a claim: its own ``cause``; for an undecided claim without one, ``"scale"`` (its interval
    straddles the criterion at this sample size, and the verdict says how many units would decide it); ``""`` on a ✓
    or an undiagnosed ✗."""
    if replicated and not undecided:
        return ""
    return cause or ("scale" if undecided else "")


def diagnosis(replicated: bool, undecided: bool, cause: str, why_not: str, notebook: str | None = None) -> str:
    """The "why not" cell: the cause's words (:data:`CAUSES`, by :func:`cause_of`), then ``why_not``; empty on a ✓.

    A stand-in-or-scale diagnosis of ``notebook`` (its path under ``book/``, no suffix) names the run that tests it
    at the paper's scale: every notebook has a ``<notebook>.paper.yaml`` preset (``tests/test_notebooks.py``)."""
    if replicated and not undecided:
        return ""
    key = cause_of(replicated, undecided, cause)
    text = ": ".join(part for part in (CAUSES.get(key, ""), why_not) if part)
    if key == "scale" and notebook:
        text += f" (at the paper's scale: make paper NB=book/{notebook}.ipynb)"
    return text


DECIDABLE_FACTOR = 100   # an undecided claim needing more than this many times its sample sits on its line


def verdict(replicated: bool, kind: str = "replication", undecided: bool = False, n_to_decide: int | None = None,
            n: int | None = None) -> str:
    """The verdict cell: ``✓ yes`` / ``✗ no`` / ``undecided at n = …``, or ``sanity ✓`` / ``sanity ✗``.

    An undecided claim says about how many units would decide it, unless that is more than
    :data:`DECIDABLE_FACTOR` times its sample: then its estimate sits on the criterion's line, and a
    count of hundreds of thousands of pairs would read as a plan rather than as "no feasible sample"."""
    if undecided:
        if n_to_decide and n and n_to_decide > DECIDABLE_FACTOR * n:
            return f"undecided at n = {n} (on the line: over {DECIDABLE_FACTOR}× this sample would decide)"
        return f"undecided at n = {n}" + (f" (≈ {n_to_decide:,} would decide)" if n_to_decide else "")
    mark = "✓" if replicated else "✗"
    return f"sanity {mark}" if kind == "sanity" else f"{mark} {'yes' if replicated else 'no'}"


def claims_table(claims: list[Claim], *, notebook: str | None = None, artifact: str = ""):
    """The claims as a table with a verdict column and the reason beside each ✗; recorded if ``notebook``.

    ``notebook`` is the notebook's path under ``book/`` without suffix (e.g.
    ``"01_sabour2016/fig3_distances"``), ``artifact`` the paper's figure or table ("Fig. 3").
    Returns a pandas ``Styler`` (its ``.data`` is the DataFrame): whole sentences, left-aligned,
    no index — a plain DataFrame would cut every cell at pandas' ``display.max_colwidth``.
    """
    import pandas as pd

    claims = list(claims)
    if notebook is not None:
        record(claims, notebook=notebook, artifact=artifact)
    frame = pd.DataFrame([
        {"claim": c.claim, "paper": c.paper, "ours": c.ours, "criterion": c.criterion,
         "replicated": verdict(c.replicated, c.kind, c.undecided, c.n_to_decide, c.n),
         "why not": diagnosis(c.replicated, c.undecided, c.cause, c.why_not, notebook)}
        for c in claims
    ])
    return frame.style.hide(axis="index").set_properties(**{"text-align": "left"})


_CLAIM_DEFAULTS = {f.name: f.default for f in fields(Claim) if f.default is not MISSING}


def claims_dir() -> Path:
    """Where claims records go: ``FEATADV_CLAIMS_DIR``, else ``FEATADV_CACHE/claims``."""
    value = os.environ.get(CLAIMS_ENV)
    if value:
        return Path(value).expanduser()
    from .data import cache_dir

    return cache_dir() / "claims"


def _hash_cells(cells: list[str]) -> str:
    digest = hashlib.sha256()
    for cell in cells:
        digest.update(cell.strip().encode())
        digest.update(b"\0")
    return digest.hexdigest()


def executed_code_hash() -> str | None:
    """Hash of the cells this IPython kernel has executed so far (``None`` outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or "In" not in shell.user_ns:
        return None
    return _hash_cells([cell for cell in shell.user_ns["In"][1:]])


def notebook_code_hash(path: str | os.PathLike) -> str:
    """Hash of a notebook's code cells up to its (last) claims cell, as :func:`executed_code_hash` sees them."""
    cells = [c for c in json.loads(Path(path).read_text())["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in cells]
    last = max((i for i, s in enumerate(sources) if _CALL in s), default=len(sources) - 1)
    return _hash_cells(sources[:last + 1])


def notebook_has_claims(path: str | os.PathLike) -> bool:
    """Whether a notebook has a claims cell (a code cell calling ``claims_table``)."""
    cells = json.loads(Path(path).read_text())["cells"]
    return any(c["cell_type"] == "code" and _CALL in "".join(c["source"]) for c in cells)


def _record_path(folder: Path, notebook: str) -> Path:
    return folder / (notebook.replace("/", "__") + ".json")


def record(claims: list[Claim], *, notebook: str, artifact: str = "") -> Path:
    """Write the claims of ``notebook`` (path under ``book/``, no suffix) atomically as JSON."""
    if not notebook or notebook.endswith(".ipynb") or notebook.startswith("/"):
        raise ValueError(f"notebook must be a path under book/ without suffix, got {notebook!r}")
    folder = claims_dir()
    folder.mkdir(parents=True, exist_ok=True)
    body = {"notebook": notebook, "artifact": artifact, "code_hash": executed_code_hash(),
            "claims": [dict(asdict(c), replicated=bool(c.replicated)) for c in claims]}
    path = _record_path(folder, notebook)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, ensure_ascii=False, indent=1)
    os.replace(tmp, path)
    return path


def find_book_root(start: str | os.PathLike | None = None) -> Path:
    """The project folder: the first of ``start`` (default: the working directory) and its
    parents that holds ``_toc.yml`` (notebooks run in ``book/<chapter>/`` or a smoke-run copy)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    raise FileNotFoundError(f"no _toc.yml in {here} or any folder above it")


def toc_notebooks(root: str | os.PathLike) -> list[str]:
    """The notebooks of the table of contents, as paths under ``book/`` without suffix, in order."""
    import yaml

    root = Path(root)
    files: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load((root / "_toc.yml").read_text()))
    out = []
    for file in files:
        rel = file[:-6] if file.endswith(".ipynb") else file
        if (root / f"{rel}.ipynb").is_file():
            out.append(rel.removeprefix("book/"))
    return out


def collect(root: str | os.PathLike, folder: str | os.PathLike | None = None):
    """Every claim of every notebook in the TOC that has claims → (claims DataFrame, status DataFrame).

    The status frame has one row per such notebook: ``notebook``, ``status`` (``current``,
    ``stale`` or ``missing``) and ``n_claims``. The claims frame has one row per claim of the
    notebooks with a current record: chapter, notebook, artifact and the claim's fields (the
    defaults for fields that records written before them lack).
    """
    import pandas as pd

    root, folder = Path(root), Path(folder) if folder else claims_dir()
    rows, status = [], []
    for notebook in toc_notebooks(root):
        path = root / "book" / f"{notebook}.ipynb"
        if notebook == "claims" or not notebook_has_claims(path):
            continue
        rec_path = _record_path(folder, notebook)
        if not rec_path.is_file():
            status.append({"notebook": notebook, "status": "missing", "n_claims": 0})
            continue
        rec = json.loads(rec_path.read_text())
        current = rec.get("code_hash") == notebook_code_hash(path)
        status.append({"notebook": notebook, "status": "current" if current else "stale",
                       "n_claims": len(rec["claims"])})
        if current:
            chapter = notebook.split("/")[0]
            rows += [dict(chapter=chapter, notebook=notebook, artifact=rec.get("artifact", ""),
                          **{**_CLAIM_DEFAULTS, **c}) for c in rec["claims"]]
    columns = ["chapter", "notebook", "artifact", *(f.name for f in fields(Claim))]
    return pd.DataFrame(rows, columns=columns), pd.DataFrame(status, columns=["notebook", "status", "n_claims"])

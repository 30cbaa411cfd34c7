"""Execute one of the book's notebooks in this process's rank of a ``torchrun`` job (or alone).

``torchrun --nproc-per-node=K -m featadv_core.run_notebook NOTEBOOK OUTPUT [-f preset.yaml] [-p name value]``

papermill injects the parameters (a paper preset with ``-f``, single values with ``-p``) and
executes the notebook in a kernel that inherits this process's ``RANK`` and ``WORLD_SIZE``, so
the cached runs inside it share out their chunks (:mod:`featadv_core.distributed`). Rank 0
writes ``OUTPUT`` (the book's page); rank r > 0 writes ``OUTPUT`` with ``.rank<r>`` before the
suffix, for inspection. Without torchrun it is papermill with a parameter file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import distributed

__all__ = ["main", "output_path"]


def output_path(output: str | Path, rank: int) -> Path:
    """Where rank ``rank`` writes its executed copy of the notebook."""
    output = Path(output)
    return output if rank == 0 else output.with_name(f"{output.stem}.rank{rank}{output.suffix}")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("-f", "--parameters-file", help="a YAML file of parameters (e.g. <notebook>.paper.yaml)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="one parameter (the value is read as YAML: 3, true, [a, b], cuda)")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default: none)")
    args = parser.parse_args(argv)
    import papermill
    import yaml

    params = yaml.safe_load(Path(args.parameters_file).read_text()) if args.parameters_file else {}
    params = dict(params or {}, **{name: yaml.safe_load(value) for name, value in args.parameter})
    out = output_path(args.output, distributed.rank())
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(args.notebook, str(out), parameters=params, progress_bar=distributed.is_main(),
                               execution_timeout=args.timeout, cwd=str(Path(args.notebook).resolve().parent))
    return out


if __name__ == "__main__":
    main()

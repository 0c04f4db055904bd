"""Options that several commands share, declared once as annotated types (typer's ``Annotated`` style).

A command writes ``model: ModelKey = ...`` (required) or ``model: ModelKey = None`` (optional); the flag,
its short form and its help text come from here, so the same option reads the same on every command.
Options whose help says something particular to one command stay in that command's signature.
"""

from __future__ import annotations

from typing import Annotated

import typer

#: ``--model``: the encoder whose vectors a command uses (search, index build, explain, eval)
ModelKey = Annotated[str, typer.Option("--model", "-m", help="encoder key, e.g. efficientnet_lite0")]
#: ``--model``, worded short (index drop, eval linear and ablation)
EncoderKey = Annotated[str, typer.Option("--model", "-m", help="encoder key")]
#: ``--model`` as a filter of a status listing (index status, ingest status)
OnlyModel = Annotated[str, typer.Option("--model", "-m", help="only this encoder")]

#: ``--dataset``: repeatable or comma-separated dataset keys restricting an evaluation
EvalDatasets = Annotated[
    list[str], typer.Option("--dataset", "-d", help="restrict to dataset key(s); default: all")
]
#: ``--dataset``: repeatable or comma-separated dataset keys selecting the images worked on
Datasets = Annotated[list[str], typer.Option("--dataset", "-d", help="dataset key(s); default: all")]

#: ``--n``: the retrieval cut-offs
Cutoffs = Annotated[str, typer.Option("--n", help="cut-offs N, comma-separated")]
#: ``--mode`` of a search-based evaluation whose default comes from the profile
SearchMode = Annotated[
    str,
    typer.Option("--mode", help="ann (HNSW index; default) or exact (sequential scan; the paper profile)"),
]
#: ``--connections`` of the evaluations that run queries in parallel
Connections = Annotated[int, typer.Option("--connections", help="parallel database connections")]
#: ``--progress/--no-progress`` of long-running commands
ShowProgress = Annotated[bool, typer.Option("--progress/--no-progress")]
#: ``--seed`` of a seeded computation
Seed = Annotated[int, typer.Option("--seed")]

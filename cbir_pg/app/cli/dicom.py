"""``cbir-pg dicom listen``: receive studies pushed by a PACS or a modality (C-STORE SCP)."""

from __future__ import annotations

import typer

from cbir_pg.app.cli._common import console, database, split_names

app = typer.Typer(
    help="DICOM networking: a C-STORE listener that imports what it receives.", no_args_is_help=True
)


@app.command()
def listen(
    ctx: typer.Context,
    port: int = typer.Option(11112, "--port", min=0, max=65535, help="TCP port (0: any free port)"),
    ae_title: str = typer.Option("CBIRPG", "--ae-title", help="this listener's AE title"),
    dataset: str = typer.Option("received", "--dataset", "-d", help="dataset key the instances go to"),
    allow_aet: list[str] = typer.Option(
        None, "--allow-aet", help="calling AE titles allowed to send (repeatable); default: any"
    ),
    bind: str = typer.Option(
        "127.0.0.1", "--bind", help="address to listen on (loopback by default; 0.0.0.0 for every interface)"
    ),
    label: str = typer.Option(None, "--label", help="one source label for every image received"),
) -> None:
    """Store, import and queue for embedding every instance sent here; SIGTERM finishes the associations
    in progress, imports what they sent and exits 0 (docs/pacs.md)."""
    import signal
    import threading

    from cbir_pg.pacs.listener import Listener

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    lst = Listener(
        database(ctx),
        dataset=dataset,
        port=port,
        ae_title=ae_title,
        allowed_aets=split_names(allow_aet),
        bind=bind,
        label=label,
    )
    lst.start()
    allowed = ", ".join(lst.allowed) or "any calling AE title"
    console.print(f"listening on {bind}:{lst.port} as {lst.ae_title} for dataset {dataset} ({allowed})")
    s = lst.serve(stop)
    errs = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items()))
    console.print(
        f"stopped after {s.seconds:.1f} s: {s.associations} associations, {s.received} instances received, "
        f"{s.imported} imported" + (f"; errors (see cbir.error): {errs}" if errs else "")
    )


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="dicom")

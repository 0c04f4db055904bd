"""The app layer: what a person runs. The command line (:mod:`cbir_pg.app.cli`), the end-to-end demo
(:mod:`cbir_pg.app.demo`, its data files in :mod:`cbir_pg.app.demo_data`) and the web server of
:mod:`cbir_pg.app.serve`. The app imports the core, :mod:`cbir_pg.ingest` and :mod:`cbir_pg.eval`;
nothing below it imports the app.
"""

from cbir_pg.app.cli import main

main()

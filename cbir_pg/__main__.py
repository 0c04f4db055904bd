from cbir_pg.cli import main

main()

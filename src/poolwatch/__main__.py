from poolwatch.cli import main

main()

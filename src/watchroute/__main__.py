from watchroute.cli import main

main()

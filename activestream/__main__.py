from activestream.cli import main

main()

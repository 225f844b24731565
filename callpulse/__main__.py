from callpulse.cli import main

main()

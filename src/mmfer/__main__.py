from mmfer.cli import main

main()

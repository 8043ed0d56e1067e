from llmux.cli.main import main

main()

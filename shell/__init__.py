"""The application shell: the `recsys` command, the demo, the local stack and the producer CLI.

It sits above the roles (it starts them and registers their sub-commands) and below `bench/`;
nothing in the core or in a role imports it.

    cli.py          `recsys`: one console command, one sub-command per role
    localstack.py   the embedded broker and redis-server on free ports (tests, demo, bench)
    stack_cli.py    `recsys stack up`
    produce_cli.py  `recsys produce`: replay a source into Kafka
    demo.py         `recsys demo`: the whole system on local defaults
    demo_cli.py     its sub-command
"""

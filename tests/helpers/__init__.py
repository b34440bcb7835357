"""What the tests share: real local servers (chat_server, local_http, studio_server), tiny models
built offline (tiny_models, tiny_diffusers), subprocess workers (cli_batch, dist_train_worker) and
fixture files (official_standin/, wise_fixture.json). Tests import them as ``helpers.<module>``
(``tests/`` is on the path under pytest; benchmarks and scripts add it themselves).
"""

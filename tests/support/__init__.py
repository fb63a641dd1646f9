"""What the tests share and are not tests: fakes and scripted rewards, the one serve-in-a-thread
helper (:mod:`tests.support.serving`), and modules run in other processes (sandbox workers, the
wedged server, the health poller)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WORKBENCH_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), "runs", "cache"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

#: a small real corpus every test can share: the docstrings of `datasets` (~570 docs, ~2 s to build once)
SMALL_CORPUS = "pydocs:datasets"


@pytest.fixture(scope="session")
def small_corpus():
    import workbench as wb
    return wb.corpus(SMALL_CORPUS)


@pytest.fixture(scope="session")
def small_prep():
    import workbench as wb
    return wb.prepare(SMALL_CORPUS, "bert-tiny", seq_len=64, vocab_size=1024, seed=0)


@pytest.fixture(scope="session")
def small_prep_clm():
    import workbench as wb
    return wb.prepare(SMALL_CORPUS, "gpt2-tiny", seq_len=64, vocab_size=1024, seed=0)


@pytest.fixture
def one_thread():
    """Tiny models run one compute thread per process (DESIGN.md); two on a busy 2-core machine are ~15x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

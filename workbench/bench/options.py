"""The benchmarks' command-line options, in one module that imports only the standard library.

``python -m workbench bench NAME --help`` and a bad option answer from here without importing
torch (each benchmark module re-exports its function as ``add_arguments``).
"""
from __future__ import annotations

import argparse


def fl(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=10000, help="number of points (default 10000)")
    parser.add_argument("--dim", type=int, default=64, help="features per point (default 64)")
    parser.add_argument("--budget", type=int, default=2500, help="points to select (default 2500)")
    parser.add_argument("--kernel", choices=["dense", "knn"], default="dense")
    parser.add_argument("--knn", type=int, default=10, help="neighbours per point for --kernel knn")
    parser.add_argument("--optimizer", choices=["lazy", "naive", "stochastic"], default="lazy",
                        help="workbench optimizer (default lazy); the peers run their lazy greedy")
    parser.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    parser.add_argument("--clusters", type=int, default=50, help="Gaussian blobs in the data (default 50)")
    parser.add_argument("--spread", type=float, default=0.5, help="blob standard deviation (centres ~ N(0, I))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repetitions; the best of each side is reported")
    parser.add_argument("--device", default=None, help="torch device for the workbench (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every side (default 1)")
    parser.add_argument("--epsilon", type=float, default=0.01, help="stochastic greedy epsilon")
    parser.add_argument("--memory-limit-gb", type=float, default=4.0)
    parser.add_argument("--skip-submodlib", action="store_true", help="skip both submodlib paths")
    parser.add_argument("--skip-submodlib-data", action="store_true", help="skip submodlib's slow data= path")
    parser.add_argument("--submodlib-data-max-n", type=int, default=10000,
                        help="skip submodlib's data= path above this n (default 10000; it takes tens of seconds there)")
    parser.add_argument("--skip-apricot", action="store_true", help="skip apricot-select")
    parser.add_argument("--gpu-only", action="store_true", help="workbench and GEMM bound only (no CPU peers)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")


def train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="tiny",
                        help="preset size: tiny | mini | small | medium | base, or bert-<size> (default tiny)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per step (default 32)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per document (default 128)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="WordPiece vocabulary (default 8192)")
    parser.add_argument("--corpus", default="pydocs:numpy,sklearn", help="corpus spec (default pydocs:numpy,sklearn)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side first (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"],
                        help="autocast for every side (default auto: bf16 on a bf16 GPU, else fp32)")
    parser.add_argument("--bf16", action="store_const", const="bf16", dest="precision",
                        help="same as --precision bf16")
    parser.add_argument("--peak-size", type=int, default=1024, help="matmul size for the measured peak (default 1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")


def probe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--candidates", type=int, default=64, help="number of candidates probed (default 64)")
    parser.add_argument("--layers", type=int, default=2, help="default 2 (gpt2-tiny, the MATES notebook)")
    parser.add_argument("--hidden", type=int, default=128, help="default 128 (gpt2-tiny)")
    parser.add_argument("--heads", type=int, default=2, help="default 2 (gpt2-tiny)")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per candidate / reference block (default 64)")
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary (default 4096, the MATES tiny notebook)")
    parser.add_argument("--ref-size", type=int, default=8, help="reference blocks (default 8, the MATES tiny notebook)")
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--train-steps", type=int, default=3, help="steps taken before probing (optimizer state)")
    parser.add_argument("--chunk-size", type=int, default=16, help="candidates per batched pass (default 16, "
                                                                    "MatesSampler's probe_chunk)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per prober and setting; best is reported")
    parser.add_argument("--threads", type=int, default=0, help="threads of the all-core setting (0 = every core)")
    parser.add_argument("--processes", type=int, default=-1,
                        help="processes of the 'naive, one process per core' line (-1 = every core, 0 = skip)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    parser.add_argument("--peak-seconds", type=float, default=1.0, help="seconds of GEMMs per peak measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")


OPTIONS = {"fl": fl, "train": train, "probe": probe}

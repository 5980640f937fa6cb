"""The commands that use a trained run (lesson 10): ``index`` a gallery, ``search`` it with a "no match" answer,
``evaluate`` a query/gallery split (closed and open set) and ``calibrate`` the threshold on held-out images."""
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import evaluation
from ..session import pick_device
from . import folder, index, rerank, verify

THRESHOLD_HELP = ("decide 'no match' below: f1 (the calibrated threshold of best F1, the default), fmr=1e-3 or "
                  "fmr=1e-2 (the calibrated threshold at that false match rate), a similarity, or none")


def device_from(name: str) -> torch.device:
    return pick_device() if name == "auto" else torch.device(name)


def add_parsers(commands) -> None:
    """The sub-commands ``index``, ``search``, ``evaluate`` and ``calibrate`` of the command."""
    indexer = commands.add_parser("index", help="index a gallery (folders or image files) for search; rerun to add")
    indexer.add_argument("run_dir", type=Path)
    indexer.add_argument("gallery", type=Path, nargs="+", help="folders (searched recursively) or image files")
    indexer.add_argument("--index", default="auto", choices=index.KINDS,
                         help="faiss index: auto (exact up to 100,000 images, HNSW beyond), flat, ivf, hnsw, ivfpq")
    indexer.add_argument("--rebuild", action="store_true", help="start a new index instead of adding to it")
    searcher = commands.add_parser("search", help="nearest indexed images of query images, or 'no match'")
    searcher.add_argument("run_dir", type=Path)
    searcher.add_argument("images", type=Path, nargs="+")
    searcher.add_argument("--k", type=int, default=8, help="neighbours per query (default: 8)")
    searcher.add_argument("--threshold", default="f1", help=THRESHOLD_HELP)
    searcher.add_argument("--grid", type=Path, help="also draw the results into this PNG file")
    evaluator = commands.add_parser("evaluate", help="P@1, R-Precision, MAP@R of queries against a gallery")
    evaluator.add_argument("run_dir", type=Path)
    evaluator.add_argument("--queries", type=Path, nargs="+", required=True, help="folders or files; class = folder")
    evaluator.add_argument("--gallery", type=Path, nargs="+", required=True, help="folders or files; class = folder")
    evaluator.add_argument("--threshold", default="f1", help=THRESHOLD_HELP)
    evaluator.add_argument("--json", type=Path, help="also write the results to this file")
    calibrator = commands.add_parser("calibrate", help="calibrate the 'no match' threshold on held-out images")
    calibrator.add_argument("run_dir", type=Path)
    calibrator.add_argument("held_out", type=Path, nargs="+", help="folders or files of held-out images, of the "
                            "gallery's classes and of classes it lacks (class = folder name)")
    for parser in (indexer, searcher, evaluator, calibrator):
        parser.add_argument("--device", default="auto")
    for parser in (searcher, evaluator):
        parser.add_argument("--rerank", default="none", choices=("none", "qe"),
                            help="qe: query expansion, each query averaged with its --qe-k first neighbours and "
                            "searched again ('no match' is still decided on the first search's score)")
        parser.add_argument("--qe-k", type=int, default=2, help="neighbours averaged into a query (default: 2)")


def index_command(args) -> int:
    run = index.load(args.run_dir)
    built, gallery, added = index.index_gallery(run, args.gallery, device_from(args.device), args.index, args.rebuild)
    print(f"added {added} images; {args.run_dir / index.FILES['index']} holds {built.ntotal} images of "
          f"{len(set(gallery.labels))} classes ({index.kind_of(built)} index)")
    return 0


def print_results(run: index.Run, paths, similarities, indices, threshold, best=None) -> None:
    """Each query's neighbours (rank, cosine distance, class, path), after a "no match" line when its ``best``
    similarity (N,) (by default the first neighbour's) is below ``threshold``."""
    best = similarities[:, 0] if best is None else best
    for path, row_s, row_i, score in zip(paths, similarities, indices, best.tolist()):
        print(f"{path}:")
        if not bool(verify.decide(torch.tensor([score]), threshold)):
            print(f"  no match (best similarity {score:.3f} < threshold {threshold:.3f})")
        for rank, (s, i) in enumerate(zip(row_s.tolist(), row_i.tolist()), start=1):
            print(f"  {rank:>3}  {1 - s:.4f}  {run.classes[int(run.labels[i])]:<20}  {run.paths[i]}")


def search_command(args) -> int:
    bad = [f"{path}: {why}" for path in args.images if (why := folder.unreadable(path))]
    if bad:
        raise folder.FolderError("Cannot read these query images:\n" + "\n".join(bad))
    run = index.load(args.run_dir)
    threshold = verify.threshold_of(verify.load(args.run_dir), args.threshold)
    embeddings = index.embed_files(run, args.images, device_from(args.device))
    distances, indices = index.search(run.index, embeddings, args.k)
    best = 1 - distances[:, 0]  # the calibrated score: the first search's
    if args.rerank == "qe":
        distances, indices = rerank.search(run.index, embeddings, args.k, args.qe_k)
    print_results(run, args.images, 1 - distances, indices, threshold, best)
    if args.grid:
        import matplotlib

        matplotlib.use("Agg")
        from .. import plotting

        plotting.retrieval_grid([str(p) for p in args.images], None, run.paths, run.labels, indices, run.classes,
                                distances=distances, load=folder.open_rgb).savefig(args.grid, dpi=120)
        print(f"Wrote {args.grid}")
    return 0


def embed_sets(run: index.Run, queries, gallery, device) -> tuple:
    """(query embeddings, query labels, gallery embeddings, gallery labels, class names): classes by folder name,
    numbered alike on both sides."""
    found = index.Gallery()
    gallery_scan = found.scan(gallery)
    query_scan = index.Gallery(classes=found.classes).scan(queries)
    return (*index.embed_paths(run.model, query_scan, run.size, device),
            *index.embed_paths(run.model, gallery_scan, run.size, device), found.classes)


def query_gallery(queries, query_labels, gallery, gallery_labels, threshold, qe_k: int = 0) -> dict:
    """Closed set (queries of the gallery's classes): P@1, R-Precision, MAP@R; open set at ``threshold``: known
    queries answered right, unknown queries (classes not in the gallery) answered "no match". ``qe_k > 0``: the
    ranking after query expansion with that many neighbours; "no match" is decided on the first search's score."""
    known = torch.isin(query_labels, gallery_labels)
    if not known.any():
        raise ValueError("No query's class (its folder's name) is in the gallery: nothing to retrieve.")
    ranked = rerank.query_expansion(queries, gallery, qe_k) if qe_k > 0 else queries
    closed = index.query_gallery_metrics(ranked[known], query_labels[known], gallery, gallery_labels)
    best = (F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T).max(1).values
    nearest = (F.normalize(ranked.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T).argmax(1)
    correct = gallery_labels[nearest] == query_labels
    return {"closed_set": closed, "open_set": verify.open_set(best, correct, known, threshold),
            "queries": len(queries), "unknown_queries": int((~known).sum()), "gallery": len(gallery)}


def evaluate_command(args) -> int:
    run = index.load(args.run_dir)
    threshold = verify.threshold_of(verify.load(args.run_dir), args.threshold)
    *sets, _ = embed_sets(run, args.queries, args.gallery, device_from(args.device))
    result = query_gallery(*sets, threshold, args.qe_k if args.rerank == "qe" else 0)
    print(f"{result['queries']} queries ({result['unknown_queries']} of classes not in the gallery), "
          f"{result['gallery']} gallery images" + (f", query expansion with {args.qe_k} neighbours"
                                                   if args.rerank == "qe" else ""))
    print(evaluation.metrics_table({"query/gallery": {"known classes": result["closed_set"]}}))
    shown = {k: ("-" if v is None else f"{v:.3f}") for k, v in result["open_set"].items()}
    print("open set: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in shown.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def calibrate_command(args) -> int:
    run = index.load(args.run_dir)
    found = index.Gallery().scan(args.held_out)
    queries, labels = index.embed_paths(run.model, found, run.size, device_from(args.device))
    distances, nearest = index.search(run.index, queries, 1)  # the run's index: exact or approximate, as search uses
    right = torch.tensor([found.classes[int(c)] == run.classes[int(run.labels[i])]
                          for c, i in zip(labels, nearest[:, 0])])
    best = 1 - distances[:, 0]
    calibration = {**verify.calibrate_scores(best[right], best[~right]), "kind": "search"}
    verify.save(args.run_dir, {**calibration, "on": " ".join(map(str, args.held_out))})
    print(verify.summary(calibration))
    return 0


COMMANDS = {"index": index_command, "search": search_command, "evaluate": evaluate_command,
            "calibrate": calibrate_command}

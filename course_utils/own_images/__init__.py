"""Metric learning on your own images (lesson 10): any folder of classes, a pretrained ResNet trunk with a
2048 -> 128 embedder and a batch-norm neck, the joint ``0.1 * metric + cross-entropy`` recipe with a cosine
classifier head, a faiss index of any gallery to search, and a calibrated "no match" answer.

Import the modules by name, as the lesson does:

- ``folder``: read an ImageFolder-layout directory, split it by class or by image (and hold out validation
  images of the training classes), preprocess the images with the trunk's weights' own sizes;
- ``network``: the trunk (ResNet-50 or ResNet-18) and embedder, pretrained weights, frozen batch norm, TorchScript;
- ``train``: the batch size MPerClassSampler accepts, ``training.fit`` with the joint loss, a checkpoint it
  resumes from, a seed per epoch, and ``KeepBest`` (the epoch chosen on validation images);
- ``index``: faiss indexes (exact, IVF, HNSW, IVF-PQ) of a gallery, the id -> path map, incremental adds, and
  query/gallery retrieval metrics (pictures of what it finds: ``plotting.retrieval_grid`` with
  ``load=folder.open_rgb``);
- ``verify``: the similarity threshold calibrated on held-out pairs, "no match", open-set evaluation;
- ``parallel``: the same training under ``torchrun`` (DDP, PML's distributed wrappers, a sampler of each
  process's own classes); ``ddp_check`` checks it against one process.

The same job as commands: ``python -m course_utils.own_images train FOLDER --out RUN_DIR``, then ``index``,
``search``, ``evaluate``, ``calibrate`` (see ``cli`` and docs/own_images.md).
"""

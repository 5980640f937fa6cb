"""Metric learning on your own images (lesson 10): any folder of classes, a pretrained ResNet trunk with a
2048 -> 128 embedder, the joint ``0.1 * metric + cross-entropy`` recipe, and a faiss index to search.

Import the modules by name, as the lesson does:

- ``folder``: read an ImageFolder-layout directory, split it by class or by image, preprocess the images;
- ``network``: the trunk (ResNet-50 or ResNet-18) and embedder, pretrained weights, frozen batch norm;
- ``train``: the batch size MPerClassSampler accepts, and ``training.fit`` with the joint loss, a checkpoint it
  resumes from and a seed per epoch;
- ``index``: the faiss index of a trained model, exported to and loaded from a run folder (pictures of what
  it finds: ``plotting.retrieval_grid`` with ``load=folder.open_rgb``).

The same job as one command: ``python -m course_utils.own_images train FOLDER --out RUN_DIR`` (see ``cli``).
"""

"""Retraining the face descriptor: FaceNet-style transfer learning on the enrolled faces.

A run lives in one folder on the shared volume (:mod:`training.rundir`): its config
(:mod:`training.config`), its dataset exported from the gallery or an identity-folder tree
(:mod:`training.data`), checkpoints, progress, the exported model and its result. Workers
(``python -m training.worker``, :mod:`training.worker`) train it with MultiWorkerMirroredStrategy
in a hand-written loop (:mod:`training.loop`): P x K identity-balanced batches
(:mod:`training.batches`), triplet losses with online mining or ArcFace
(:mod:`training.losses`), on the pretrained dlib ResNet, a small scratch ResNet or an ImageNet
MobileNetV2 (:mod:`training.backbones`). The chief exports the model and scores it and the
active model on held-out identities (:mod:`training.evaluate`); promotion is the retrain
function's decision. :mod:`training.launcher` runs the workers as local processes, as the
Kubernetes launcher runs them as an Indexed Job.
"""

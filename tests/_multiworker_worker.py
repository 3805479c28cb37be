"""One worker of the two-process MultiWorkerMirroredStrategy test.

Usage: python _multiworker_worker.py MODEL_DIR OUT.npz   (TF_CONFIG set by the test)
Trains two epochs on a small digits subset and saves its final weights.
"""

import sys

import numpy as np
from _tiny_data import tiny_digits

from sst_tf import distribute
from sst_tf.trainer import TrainConfig, Trainer

strategy = distribute.make_strategy("multi_worker")
tiny = tiny_digits()
cfg = TrainConfig(model_dir=sys.argv[1], backbone="small_cnn", pretrained=False,
                  validation_share=0.0,  # every training image trains
                  embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                  batch_size=25, num_targets=3, epochs=2, lr=1e-3, progress=False,
                  strategy="multi_worker", refresh="memory", neighborhoods="balanced")
trainer = Trainer(cfg, dataset=tiny, strategy=strategy)
metrics = trainer.fit()
np.savez(sys.argv[2], chief=trainer.is_chief, replicas=trainer.num_replicas,
         epochs=int(trainer.state.epoch.numpy()), after=bool(metrics.get("after")),
         **{f"w{i}": w.numpy() for i, w in enumerate(trainer.model.weights)})

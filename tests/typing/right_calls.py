"""The same public API called correctly: mypy must accept every line (tests/test_typing.py)."""

import numpy as np

import fastmlp
from fastmlp import checked_kernels
from fastmlp.backends.numba.backend import Backend
from fastmlp.datasets import load_mnist

X_train, y_train, X_test, y_test = load_mnist()
model = fastmlp.MLP([784, 128, 10], init="he", seed=0)
trainer = fastmlp.Trainer(model, "numpy", lr=0.1, batch_size=32, seed=np.random.default_rng(0), momentum=0.9)
history = trainer.fit(X_train[:64], y_train[:64], epochs=1, validation_data=(X_test[:64], y_test[:64]))
loss, accuracy = trainer.evaluate(X_test[:64], y_test[:64])
total: float = loss + accuracy + history[-1].train_loss
probs = model.predict_proba(X_test[:8])
classes = np.empty(8, dtype=np.int64)
checked_kernels.argmax_rows_into(classes, probs)
checked_kernels.softmax_inplace(np.zeros((4, 3), dtype=np.float32))
pixels, labels, test_pixels, test_labels = load_mnist(as_pixels=True)
fastmlp.Trainer(model, Backend(threads=1)).fit(pixels, labels, epochs=1)
clf = fastmlp.MLPClassifier((16,), backend="numpy", max_iter=2, random_state=0).fit(X_train[:64], y_train[:64])
score: float = clf.score(X_test[:64], y_test[:64])
names: tuple[str, ...] = fastmlp.available_backends()

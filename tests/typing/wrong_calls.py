"""Calls of fastmlp's public API with a wrong argument type: mypy must flag every line marked `# wrong`.

tests/test_typing.py runs mypy on this file (it is never executed) and compares the flagged lines
with the marked ones, so an annotation that loosens to Any, or goes missing, fails the test.
"""

import numpy as np

import fastmlp
from fastmlp import checked_kernels
from fastmlp.datasets import load_mnist

model = fastmlp.MLP("784-128-10")  # wrong: layer sizes are ints, not a string
model = fastmlp.MLP([784, 10], seed="zero")  # wrong: the seed is an int or a NumPy seed
model.predict_proba(np.zeros((1, 784)), batch_size="big")  # wrong: batch_size is an int
model.save(42)  # wrong: a path, not an int
trainer = fastmlp.Trainer(model, lr="fast")  # wrong: lr is a float
trainer = fastmlp.Trainer(model, backend=3)  # wrong: a backend name or object
trainer.fit(np.zeros((2, 784)), np.zeros(2, int), epochs="3")  # wrong: epochs is an int
clf = fastmlp.MLPClassifier(hidden_layer_sizes="64")  # wrong: an int or a sequence of ints
clf = fastmlp.MLPClassifier(max_iter=2.5)  # wrong: max_iter is an int
fastmlp.get_backend(0)  # wrong: backends are named by str
load_mnist(download="no")  # wrong: download is a bool
Z = np.zeros((4, 3), dtype=np.float32)
checked_kernels.argmax_rows_into(np.zeros(4, dtype=np.int64), [[1.0, 2.0]])  # wrong: Z is a float32 array
Z64 = np.zeros((4, 3), dtype=np.float64)
checked_kernels.softmax_inplace(Z64)  # wrong: float64, not float32
checked_kernels.sgd_update_inplace(Z, Z, lr="0.1")  # wrong: lr is a float
X_train, y_train, X_test, y_test = load_mnist(as_pixels=True)
checked_kernels.gather_rows(Z, X_train, np.arange(4))  # wrong: Pixels, not a float32 array
loss: str = fastmlp.Trainer(model).evaluate(Z, y_test)[0]  # wrong: the loss is a float

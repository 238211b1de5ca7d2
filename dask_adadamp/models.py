"""Small PyTorch modules used by the demo, tests and benchmarks.

They live in the package so that workers can import them; a module class
of your own needs to be importable on the workers too (or defined in
``__main__``, which is pickled by value).
"""
import torch


class MLP(torch.nn.Module):
    """A multilayer perceptron returning logits (use ``CrossEntropyLoss``).

    Parameters
    ----------
    n_features, n_classes : int
    hidden : int or sequence of int
        Width of each hidden layer.
    dropout : float
        Dropout probability after each hidden layer.

    Examples
    --------
    >>> import torch
    >>> MLP(64, 10, hidden=(32, 32))(torch.zeros(5, 64)).shape
    torch.Size([5, 10])
    """

    def __init__(self, n_features=64, n_classes=10, hidden=128, dropout=0.0):
        super().__init__()
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        layers, last = [], n_features
        for width in widths:
            layers += [torch.nn.Linear(last, width), torch.nn.ReLU()]
            if dropout:
                layers.append(torch.nn.Dropout(dropout))
            last = width
        layers.append(torch.nn.Linear(last, n_classes))
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, X):
        return self.layers(X)

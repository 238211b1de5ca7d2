"""The fixed tree in which an update's chunk gradients are added.

An update's ``n`` chunks are added in one binary tree over their positions
``0 .. n-1``, whatever computed them and wherever the additions run, so
that an update's sum has the same bits on any cluster. A *node* ``(l, j)``
(``j`` a multiple of ``2**l``) is the sum of positions ``j .. j + 2**l - 1``
(those below ``n``): node ``(l + 1, j)`` is ``node(l, j) + node(l, j + 2**l)``,
or ``node(l, j)`` itself where ``j + 2**l >= n``. The root is
``(depth(n), 0)``.

Anyone holding some disjoint nodes may add those whose sibling it also
holds (:func:`reduce_nodes`); every addition is then one of the tree's, so
partial sums made on workers, in any grouping, and finished by the client
give the same bits as :func:`tree_sum` on the client alone. The workers of
an update are called in a binomial tree (:func:`children`), each adding
what its subtree computed before passing it up.
"""
import math


def depth(n):
    """Level of the root of a tree over ``n`` positions.

    >>> depth(1), depth(2), depth(5)
    (0, 1, 3)
    """
    return max(0, math.ceil(math.log2(n))) if n else 0


def reduce_nodes(nodes, n):
    """Add, in place, every pair of sibling nodes in ``nodes``.

    Parameters
    ----------
    nodes : dict of (int, int) to numpy.ndarray
        Disjoint nodes ``(level, first position)`` of the tree over ``n``
        positions; leaves are ``(0, j)``.
    n : int
        Positions in the tree.

    Returns
    -------
    dict
        ``nodes``, where no two siblings are left; it holds only the root
        ``(depth(n), 0)`` once every position was in it.

    Examples
    --------
    >>> import numpy as np
    >>> nodes = {(0, j): np.array([float(j)]) for j in (0, 1, 2)}
    >>> sorted(reduce_nodes(nodes, 4))     # position 3 is still missing
    [(0, 2), (1, 0)]
    >>> nodes[(0, 3)] = np.array([3.0])
    >>> reduce_nodes(nodes, 4)
    {(2, 0): array([6.])}
    """
    for level in range(depth(n)):
        size = 2 ** level
        for _, j in sorted(k for k in nodes if k[0] == level):
            if j % (2 * size) or (level, j) not in nodes:
                continue  # a right child: its left sibling takes it in
            right = (level, j + size)
            if j + size >= n:  # no right sibling in this tree: carried up
                nodes[(level + 1, j)] = nodes.pop((level, j))
            elif right in nodes:
                # A new array: inputs may be views of a reply or the caller's.
                nodes[(level + 1, j)] = nodes.pop((level, j)) + nodes.pop(right)
    return nodes


def tree_sum(parts):
    """Add arrays in the fixed tree over their positions.

    The tree depends only on ``len(parts)``, so the sum's bits do not depend
    on which worker computed which part, on the order results arrived in,
    or on where the additions ran.

    >>> import numpy as np
    >>> tree_sum([np.array([1.0]), np.array([2.0]), np.array([3.0])])
    array([6.])
    """
    n = len(parts)
    nodes = reduce_nodes({(0, j): p for j, p in enumerate(parts)}, n)
    total = nodes[(depth(n), 0)]
    return total.copy() if n == 1 else total


def children(members):
    """The members a call to ``members[0]`` passes on, as a binomial tree.

    ``members[0]`` calls the heads of ``members[1:2]``, ``members[2:4]``,
    ``members[4:8]``, ..., each of which does the same with its slice: every
    member is reached in ``ceil(log2(len(members)))`` hops, and when
    member ``k`` computes position ``k`` (one chunk per worker, workers in
    position order) each subtree's sum is one node of the chunk tree.

    >>> children(list("abcdef"))
    [['b'], ['c', 'd'], ['e', 'f']]
    """
    out, size = [], 1
    while size < len(members):
        out.append(members[size:2 * size])
        size *= 2
    return out


def budget(n_members, deadline):
    """Seconds a caller waits for a subtree of ``n_members`` members, each
    call of which has ``deadline`` seconds: one deadline per level, so that
    a member gives up on a stalled child before its own caller gives up on
    it.

    >>> budget(1, 2.0), budget(4, 2.0)
    (2.0, 6.0)
    """
    return (depth(n_members) + 1) * deadline


class PathChooser:
    """Whether a round of calls goes through the tree, by measurement.

    Direct calls cost the client one copy of the weights out and one sum
    back per worker; the tree costs ``ceil(log2 P)`` hops each way. Which
    is faster depends on the network, the cores and the model's size, so
    with ``policy="auto"`` a fit times both on its first rounds at each
    cluster size (by powers of two: 2-3, 4-7, 8-15, ... workers), taking
    turns until each has ``trials`` rounds, then keeps the one with the
    lower median. Both give the same bits, so the choice changes only
    time. An int policy uses the tree from that many workers on; None
    never does.

    Examples
    --------
    >>> chooser = PathChooser("auto", trials=1)
    >>> first = chooser.use_tree(4); chooser.record(4, first, 0.030)
    >>> second = chooser.use_tree(4); chooser.record(4, second, 0.010)
    >>> first, second, chooser.use_tree(5), chooser.use_tree(1)
    (False, True, True, False)
    >>> PathChooser(8).use_tree(8), PathChooser(None).use_tree(64)
    (True, False)
    """

    def __init__(self, policy="auto", trials=3):
        self.policy = policy
        self.trials = trials
        self._seconds = {}

    def use_tree(self, n_workers):
        """Send a round to ``n_workers`` workers through the tree?"""
        if self.policy is None:
            return False
        if self.policy != "auto":
            return n_workers >= self.policy
        if n_workers < 2:
            return False
        times = self._seconds.setdefault(n_workers.bit_length(), ([], []))
        direct, tree = times
        if min(len(direct), len(tree)) < self.trials:
            return len(tree) < len(direct)  # take turns, direct first
        return _median(tree) < _median(direct)

    def record(self, n_workers, tree, seconds):
        """A round to ``n_workers`` workers took ``seconds``."""
        if self.policy == "auto" and n_workers >= 2:
            self._seconds.setdefault(n_workers.bit_length(), ([], []))[tree].append(seconds)

    def summary(self):
        """Median seconds per round of each path, by cluster-size bucket."""
        return {f"{2 ** (b - 1)}-{2 ** b - 1} workers": {
                    "direct_ms": 1e3 * _median(d) if d else None,
                    "tree_ms": 1e3 * _median(t) if t else None}
                for b, (d, t) in sorted(self._seconds.items())}


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

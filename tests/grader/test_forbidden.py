"""The forbidden-names rule: PyTorch's function is forbidden, the student's own function of the same name is not."""
from course_lib.grading.submissions import defined_names, forbidden_uses

FORBID = ["scaled_dot_product_attention", "one_hot", "functional_leftover"]

OWN_SDPA = (
    "def scaled_dot_product_attention(q, k, v, mask=None):\n"
    "    s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5\n"
    "    return s.softmax(-1) @ v\n"
)


def _uses(source, *other_cells):
    return forbidden_uses(source, FORBID, defined_names([source, *other_cells]))


def test_own_function_of_the_same_name_is_allowed():
    assert _uses(OWN_SDPA) == []
    caller = "class SelfAttention:\n    def forward(self, x):\n        return scaled_dot_product_attention(x, x, x)\n"
    assert _uses(caller, OWN_SDPA) == []  # defined in another cell of the notebook
    assert _uses("def one_hot(ids, V):\n    return (ids[..., None] == torch.arange(V)).float()\n") == []
    assert _uses("import torch.nn.functional as F\ny = F.softmax(x, -1)\n") == []  # F itself is not forbidden


def test_pytorchs_function_is_forbidden_however_it_is_reached():
    for body in ("    return torch.nn.functional.scaled_dot_product_attention(q, k, v)\n",
                 "    return F.scaled_dot_product_attention(q, k, v)\n",
                 "    from torch.nn.functional import scaled_dot_product_attention as s\n    return s(q, k, v)\n",
                 "    from torch.nn.functional import scaled_dot_product_attention\n"
                 "    return scaled_dot_product_attention(q, k, v)\n"):
        src = "def scaled_dot_product_attention(q, k, v, mask=None):\n" + body
        assert _uses(src) == ["scaled_dot_product_attention"], body


def test_a_bare_name_that_is_not_the_notebooks_own_is_forbidden():
    # no def anywhere: the bare name can only be something imported elsewhere
    assert _uses("y = scaled_dot_product_attention(q, k, v)\n") == ["scaled_dot_product_attention"]
    # bound by assignment or a star import: not (only) the student's own
    assert _uses("scaled_dot_product_attention = F.scaled_dot_product_attention\n", OWN_SDPA) \
        == ["scaled_dot_product_attention"]
    star = "from torch.nn.functional import *\n" + OWN_SDPA.replace("return s.softmax(-1) @ v",
                                                                    "return scaled_dot_product_attention(q, k, v)")
    assert _uses(star) == ["scaled_dot_product_attention"]
    # names in strings still count (a way to reach something by name)
    assert _uses(OWN_SDPA + "x = 'one_hot'\n") == ["one_hot"]

"""Method tests: every method of peftlab's catalog on tiny Llama and T5, and a method added from outside."""


def catalog_methods() -> list[str]:
    """The methods peftlab's catalog registers, in order (a test may register its own, as test_new_method.py does)."""
    from peftlab.methods import get_method, method_names

    return [name for name in method_names() if get_method(name).build.__module__.startswith("peftlab.methods.")]

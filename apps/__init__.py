"""Example applications built on eventbus, written as users would write them."""

"""XSA-483: oxenstored kept a dead domain's node count.

Tearing a domain down deleted its nodes (XSA-419) but not its quota count,
so a new domain reusing the id started with the old count and could create
fewer and fewer nodes.  Safe outcome: a domain that filled its quota and
died leaves no count behind: a new domain with the same id can create its
full quota again.
"""
MAX = 6


def test_a_reused_domid_gets_its_full_quota_back(configured):
    world = configured(f"quota-maxentity = {MAX}")
    first = world.fill_quota(world.guest(5))
    assert world.quota(5) == f"dom5 quota: {MAX}/{MAX}"
    world.destroy(5)
    assert world.quota(5) == "dom5 quota: not set"
    again = world.fill_quota(world.guest(5))
    assert again == first
    world.assert_alive()

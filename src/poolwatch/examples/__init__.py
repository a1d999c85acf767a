"""Example *user* code that the demo, the docs and the tests run.

poolwatch treats frames of this package as user code (not library code), so the call sites it
reports point here, exactly as they would point into your service.
"""

"""Tiny copies of public benchmarks in their published layouts, for tests (made from skimage.data photos)."""

"""MetaImage (``.mha`` / ``.mhd``) and NRRD (``.nrrd`` / ``.nhdr``) volumes through SimpleITK.

The ITK image (LPS world, (z, y, x) numpy order) is served like a NIfTI volume: array axes
(x, y, z) and a RAS affine built from its origin, spacing and direction. Predictions go back in
the source's format (``.mhd`` sources as single-file ``.mha``) with the source's origin, spacing
and direction.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .case import CaseFormat, CaseImage, Reorient, check_integer_fit, scanner_image
from .errors import DataError


class ItkFormat(CaseFormat):
    """3D scalar MetaImage / NRRD files."""

    name = "itk"
    suffixes = (".mha", ".mhd", ".nrrd", ".nhdr")
    kind = "volume"
    output_suffix = ".mha"  # per source: see output_suffix_for

    def output_suffix_for(self, source: Path) -> str:
        """NRRD sources get ``.nrrd`` predictions, MetaImage sources ``.mha``."""
        return ".nrrd" if source.name.lower().endswith((".nrrd", ".nhdr")) else ".mha"

    def read(self, path: Path, reorient: Reorient, values: str) -> CaseImage:
        """See :meth:`CaseFormat.read`."""
        import SimpleITK as sitk

        try:
            itk = sitk.ReadImage(str(path))
        except Exception as exc:
            raise DataError(f"{path}: cannot read with SimpleITK ({type(exc).__name__}: {str(exc).strip()[:200]})") from exc
        if itk.GetDimension() != 3 or itk.GetNumberOfComponentsPerPixel() != 1:
            raise DataError(f"{path}: expected a 3D single-channel volume, got {itk.GetDimension()}D with "
                            f"{itk.GetNumberOfComponentsPerPixel()} component(s) per voxel")
        data = np.ascontiguousarray(sitk.GetArrayFromImage(itk).transpose(2, 1, 0))
        spacing = np.asarray(itk.GetSpacing(), dtype=np.float64)
        direction = np.asarray(itk.GetDirection(), dtype=np.float64).reshape(3, 3)
        lps = np.eye(4)
        lps[:3, :3] = direction * spacing  # column i = direction of axis i times its spacing
        lps[:3, 3] = itk.GetOrigin()
        extra = {"origin": itk.GetOrigin(), "spacing": itk.GetSpacing(), "direction": itk.GetDirection()}
        return CaseImage(path, scanner_image(data, lps), reorient, self, values, extra)

    def write(self, array: np.ndarray, like: CaseImage, path: Path, dtype: Any, binary: bool = False) -> Path:
        """See :meth:`CaseFormat.write`: the source's format and geometry, compressed."""
        import SimpleITK as sitk

        arr = np.asarray(array)
        if tuple(arr.shape) != tuple(like.shape):
            raise DataError(f"{path}: array shape {tuple(arr.shape)} does not match {like.path} (served shape {like.shape})")
        data = check_integer_fit(arr, dtype, path)
        itk = sitk.GetImageFromArray(np.ascontiguousarray(like.to_original(data).transpose(2, 1, 0)))
        itk.SetOrigin(like.extra["origin"])
        itk.SetSpacing(like.extra["spacing"])
        itk.SetDirection(like.extra["direction"])
        try:
            with atomic_path(path) as tmp:  # the temporary name keeps the suffix: same file type
                sitk.WriteImage(itk, str(tmp), True)
        except Exception as exc:
            raise DataError(f"{path}: cannot write with SimpleITK ({type(exc).__name__}: {exc})") from exc
        return path

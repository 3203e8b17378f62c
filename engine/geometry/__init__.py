"""Geometry shared by colliders, coupling, rendering and grid flags.

``sdf``: shape kinds and the Taichi SDFs (one kind dispatch); ``shapes``: the shape dataclasses
with numpy SDF mirrors; ``mesh``: triangle-mesh signed distances and voxel SDFs (libigl);
``pose``: quaternion rotations, pose validation and torch pose integration; ``tetmesh``:
tetrahedral meshes of tactile-sensor gels (pad, dome, tetrahedralization), numpy only.
"""

from engine.geometry.mesh import (
    Mesh,
    load_mesh,
    mesh_contains,
    mesh_grid_sdf,
    mesh_signed_distance,
    pack_mesh_sdfs,
)
from engine.geometry.pose import (
    integrate_poses,
    normalize_pose,
    quat_rotate,
    quat_rotate_inverse,
    quat_rotate_inverse_numpy,
    quat_rotate_numpy,
    step_pose,
)
from engine.geometry.sdf import (
    BOWL,
    BOX,
    CAPSULE,
    CUP,
    CYLINDER,
    MESH,
    PLANE,
    SHAPE_DIM,
    SPHERE,
    TINY,
    gather_shape,
    sdf_local,
    sdf_world,
    shape_vec_type,
)
from engine.geometry.shapes import Bowl, Box, Capsule, Cup, Cylinder, Plane, Shape, Sphere
from engine.geometry.tetmesh import (
    TetMesh,
    boundary_faces,
    dome,
    flat_pad,
    gelsight_pad,
    tet_volumes,
    tetrahedralize,
)

__all__ = [
    "BOWL",
    "BOX",
    "CAPSULE",
    "CUP",
    "CYLINDER",
    "MESH",
    "PLANE",
    "SHAPE_DIM",
    "SPHERE",
    "TINY",
    "Bowl",
    "Box",
    "Capsule",
    "Cup",
    "Cylinder",
    "Mesh",
    "Plane",
    "Shape",
    "Sphere",
    "TetMesh",
    "boundary_faces",
    "dome",
    "flat_pad",
    "gather_shape",
    "gelsight_pad",
    "integrate_poses",
    "load_mesh",
    "mesh_contains",
    "mesh_grid_sdf",
    "mesh_signed_distance",
    "normalize_pose",
    "pack_mesh_sdfs",
    "quat_rotate",
    "quat_rotate_inverse",
    "quat_rotate_inverse_numpy",
    "quat_rotate_numpy",
    "sdf_local",
    "sdf_world",
    "shape_vec_type",
    "step_pose",
    "tet_volumes",
    "tetrahedralize",
]

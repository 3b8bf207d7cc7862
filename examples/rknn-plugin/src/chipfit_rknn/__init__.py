"""chipfit's Rockchip RKNN plugin: `backend` (runs in chipfit), `sdk_main` (runs in the isolated environment)."""

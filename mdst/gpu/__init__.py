"""WebGPU access: adapter choice, device profile and presets, wgpu-native entry points."""

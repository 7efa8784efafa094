# imgforge on Nomad: a parameterized batch job on dedicated build hosts (raw_exec: imgforge
# needs root for loop devices and mounts), one dispatch per image. nomad-dispatch.sh dispatches
# a plan level by level with the image's layer key as the idempotency token, so a second
# dispatch of the same layer is not run.
job "imgforge-build" {
  type        = "batch"
  datacenters = ["dc1"]

  parameterized {
    meta_required = ["recipe", "node", "revision"]
  }

  constraint {
    attribute = "${meta.imgforge_builder}"
    value     = "true"
  }

  group "build" {
    reattempts = 0

    restart {
      attempts = 0
      mode     = "fail"
    }

    task "build" {
      driver = "raw_exec"

      config {
        command = "/bin/sh"
        args = ["-ec", <<-EOT
          cd /srv/imgforge/repo
          git fetch --quiet origin && git checkout --quiet --detach "${NOMAD_META_revision}"
          exec imgforge build "${NOMAD_META_recipe}" --node "${NOMAD_META_node}" --properties "${NOMAD_ALLOC_DIR}/${NOMAD_META_node}.properties"
        EOT
        ]
      }

      env {
        IMGFORGE_REGISTRY = "postgres://imgforge@registry.internal/imgforge"
      }

      resources {
        cpu    = 2000
        memory = 4096
      }
    }
  }
}

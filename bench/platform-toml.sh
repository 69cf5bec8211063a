# shellcheck shell=bash
# Sourced by bench/run.sh and bench/fleet-common.sh: the part of a daemon's config every bench
# shares (logs, admin, and the platform: the emulator the bench started at $EMU, the token
# file in $T). Expects EMU and T.
platform_toml() {
    cat <<TOML
log_format = "json"
shutdown_grace = "5s"
admin_listen = "127.0.0.1:0"
[platform]
endpoint = "$EMU"
org_id = "bench@AdobeOrg"
sandbox = "prod"
api_key = "bench"
access_token_file = "$T/token"
TOML
}

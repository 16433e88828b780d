# Helpers shared by the launch scripts (sourced, not run). Bash 3.2+ (macOS).
#
# Output convention of every script:
#   + CMD ARGS...   a command, shell-quoted: exactly what runs (or, with
#                   --dry-run, what would run); paste it into a shell to run it
#   # text          information (derived counts, waits, hints)

DRY_RUN=0

die() {
  echo "error: $*" >&2
  exit 2
}

info() {
  echo "# $*"
}

# q ARG: ARG quoted for a POSIX shell; plain words stay readable.
q() {
  case $1 in
    '' | *[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
    *) printf '%s' "$1" ;;
  esac
}

# qcmd ARGS...: the whole command line, each argument quoted with q.
qcmd() {
  local out='' a
  for a in "$@"; do out="$out${out:+ }$(q "$a")"; done
  printf '%s' "$out"
}

# run CMD ARGS...: prints '+ CMD ARGS' and runs it, unless --dry-run.
run() {
  echo "+ $(qcmd "$@")"
  [ "$DRY_RUN" = 1 ] || "$@"
}

# need_value FLAG VALUE [any]: FLAG was given a value; one starting with '--'
# is taken for a forgotten value (the next flag) unless the third argument is set.
need_value() {
  [ -n "$2" ] || die "$1 needs a value"
  case $2 in --*) [ -n "${3-}" ] || die "$1 needs a value (got the flag $2)" ;; esac
}

is_uint() {
  case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac
}

# positive_int FLAG VALUE
positive_int() {
  is_uint "$2" && [ "$2" -gt 0 ] || die "$1=$2: expected a positive integer"
}

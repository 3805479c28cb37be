# Sourced by study/long_table.sh and study/long_defaults.sh: one compare.py call
# trains the arms of `common` to the plateau on one benchmark of the long
# budget. Evaluations every ~6,000 image presentations, a cap of ~3 x 10^5.
# Uses the caller's $python, $here, $suite, $out and common=(...).
#
#   plateau_benchmark cross_script|many_classes|digits|cross_script_pretrained SEED
plateau_benchmark() {
  local name=$1 seed=$2 config=glyphs args
  case $name in
    cross_script) args=(--benchmarks="cross_script=$suite/cross_script"
                        --compare_eval_every=2 --epochs=100) ;;
    many_classes) args=(--benchmarks="many_classes=$suite/many_classes"
                        --compare_eval_every=6 --epochs=300) ;;
    digits) config=digits
            args=(--benchmark_name=digits --compare_eval_every=12 --epochs=600) ;;
    cross_script_pretrained)
      if [ ! -f "$suite/small_cnn_han.weights.h5" ]; then
        "$python" "$here/pretrain.py" --data_dir="$suite/pretrain" \
          --output="$suite/small_cnn_han.weights.h5"
      fi
      args=(--benchmarks="cross_script=$suite/cross_script" --noscratch
            --pretrained_benchmarks=cross_script --suite_weights="$suite/small_cnn_han.weights.h5"
            --compare_eval_every=2 --epochs=100) ;;
    *) echo "plateau_benchmark: unknown benchmark $name" >&2; return 2 ;;
  esac
  "$python" "$here/compare.py" --flagfile="$here/../configs/$config.cfg" "${common[@]}" \
    --seeds="$seed" "${args[@]}" --out_dir="$out/$name"
}

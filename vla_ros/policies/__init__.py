"""Policy backends, one subpackage each, behind one interface (`vla_ros.policies.base`)."""

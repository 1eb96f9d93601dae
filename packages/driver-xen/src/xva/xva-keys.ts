/**
 * `other_config` key of a VM imported from an XVA for a replica, set in the XVA's `ova.xml`
 * before the import: `<replica VM uuid>/<run id>`. Such a VM lives only until its disks are handed
 * to the replica; one found later is a leftover of a killed run and is destroyed with its disks.
 */
export const XVA_IMPORT_KEY = 'replikit:xva-import';

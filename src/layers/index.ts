/**
 * Getting data in and out of the pool as layers. Talks only to fs/ and pool/ through
 * their index APIs; the only module of thinfs that knows OCI's `.wh.` whiteout names.
 *
 * Images:  importImage(pool, {name, source, parent})   a new read-only image from a
 *                                                      directory or a tar / tar.gz;
 *                                                      nothing remains when it fails
 *          findImage(pool, name, syscall)              an active read-only image, or a clear error
 *          loadImage(pool, {source, name})             a whole OCI / docker image: layer devices
 *                                                      shared by chain ID, its config kept
 *          saveImage(pool, {name, dest})               an image back as oci:, oci-archive:, docker-archive:
 *          imageOf, resolveImageName, ...              what is stored of images (image-store.ts)
 * Layers:  importTar(fs, file, blockSize, opts)        one tar layer into a writable Filesystem
 *          importDirectory(fs, dir, blockSize, opts)   one directory tree into a writable Filesystem
 *          exportLayer(fs, out, {diff})                a device (or its changes over its parent) as
 *                                                      an OCI layer tar with whiteouts
 */
export { importImage, findImage } from './image.js';
export type { ImportImageOptions, ImportImageResult } from './image.js';
export { importTar } from './tar.js';
export { importDirectory } from './directory.js';
export type { ImportOptions, ImportProgress, ImportStats } from './common.js';
export type { LayerCounts } from './writer.js';
export { exportLayer } from './export.js';
export type { ExportOptions, ExportStats } from './export.js';
export {
  chainIds,
  chainIdsOfDevice,
  deviceNameFor,
  familiarReference,
  imageOf,
  imageOfDevice,
  isLayerDevice,
  layerDevices,
  listImages,
  resolveImageName,
} from './image-store.js';
export type { ImageRecord, Digest } from './image-store.js';
export { execConfigOf } from './oci.js';
export type { ImageConfig } from './oci.js';
export { loadImage } from './load.js';
export type { LoadOptions, LoadProgress, LoadResult, LoadedImage, LoadedLayer } from './load.js';
export { parseImageSpec, formatImageSpec, TRANSPORTS } from './sources.js';
export type { ImageSpec, Transport } from './sources.js';
export { saveImage } from './save.js';
export type { SaveOptions, SaveResult, SavedLayer } from './save.js';
